from defr.cli import main

main()
