from reporting.main import cli

cli()
