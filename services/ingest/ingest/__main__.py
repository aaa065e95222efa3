from ingest.main import cli

cli()
