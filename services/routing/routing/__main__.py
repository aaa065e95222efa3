from routing.main import cli

cli()
