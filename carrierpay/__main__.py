from carrierpay.cli.main import run

run()
