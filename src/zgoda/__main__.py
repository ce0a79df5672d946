from zgoda.cli import app

app()
