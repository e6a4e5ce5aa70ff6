"""Files from the Hugging Face hub, fetched (or found in the local cache) before anything else runs.

huggingface_hub retries an unreachable hub five times with back-off (about 25 s of `Retrying in 8s`)
before it gives up, and only then would a run learn that its model is not cached. EditForge asks the
hub only when it answers: with `HF_HUB_OFFLINE=1`, or when a connection to the hub cannot be opened
within a few seconds, it reads the local cache alone and says in one line what to do if a file is not
there.
"""

from __future__ import annotations

import functools
import urllib.error
import urllib.request
from pathlib import Path

from editforge.errors import EditForgeError

CONNECT_TIMEOUT = 3.0  # seconds; the hub answers in well under one when it is reachable at all


@functools.cache
def offline_reason() -> str | None:
    """Why the hub is not asked (HF_HUB_OFFLINE, or it cannot be reached), or None when it is."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1: the hub is not asked"
    try:  # through the proxies of the environment, as huggingface_hub goes
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"),
                               timeout=CONNECT_TIMEOUT).close()
    except urllib.error.HTTPError:
        pass  # an answer, whatever it says: the hub is there
    except (OSError, ValueError):
        return f"the hub ({constants.ENDPOINT}) cannot be reached; set HF_HUB_OFFLINE=1 to skip this check"
    return None


def pipeline_folder(repo_id: str, pipeline_class: type) -> Path:
    """The local folder of a hub pipeline: the cached snapshot, downloaded first if the hub is reachable."""
    reason = offline_reason()
    try:
        return Path(pipeline_class.download(repo_id, local_files_only=reason is not None))
    except Exception as exc:  # not cached, a typo, private, a broken download: the advice is the same
        raise EditForgeError(_not_available(f"`model` {repo_id}", reason, exc) +
                             f"; download it where there is internet (`hf download {repo_id}`) "
                             "or pass `model` FOLDER") from exc


def snapshot_folder(repo_id: str, *, what: str) -> Path:
    """The local folder of a whole hub model repo (a transformers model), downloaded first if the hub is reachable."""
    from huggingface_hub import snapshot_download

    reason = offline_reason()
    try:
        return Path(snapshot_download(repo_id, local_files_only=reason is not None))
    except Exception as exc:
        raise EditForgeError(_not_available(what, reason, exc) + f"; download it where there is internet "
                             f"(`hf download {repo_id}`) or pass a folder") from exc


def hub_file(repo_id: str, filename: str, *, what: str, instead: str) -> Path:
    """One file of a hub repo from the cache, downloaded first if the hub is reachable."""
    from huggingface_hub import hf_hub_download

    reason = offline_reason()
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=reason is not None))
    except Exception as exc:
        raise EditForgeError(_not_available(what, reason, exc) + f"; {instead}") from exc


def _not_available(what: str, reason: str | None, exc: Exception) -> str:
    if reason is not None:
        return f"{what} is not in the local Hugging Face cache ({reason})"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{what} could not be downloaded ({exc.__class__.__name__}{': ' + detail if detail else ''})"
