from mmfair.cli.app import main

main()
