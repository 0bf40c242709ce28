from tests.unit.cli.harness import fake  # noqa: F401  (the fixture)
