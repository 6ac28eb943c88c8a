from cgsc.cli import run

run()
