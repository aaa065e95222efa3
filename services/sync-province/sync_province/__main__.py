from sync_province.main import cli

cli()
