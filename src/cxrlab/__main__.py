from cxrlab.cli import main

main()
