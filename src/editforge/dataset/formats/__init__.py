"""One module per dataset layout: how to read it as samples and, for trainer layouts, how to write it."""
