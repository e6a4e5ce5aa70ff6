from editforge.cli import main

main()
