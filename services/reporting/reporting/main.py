import typer

cli = typer.Typer(add_completion=False)
