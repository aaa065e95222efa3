from ioc_cli.app import main

main()
