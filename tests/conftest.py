"""Project-wide pytest configuration: the fixture plugins every test directory can use."""

pytest_plugins = ["tests.fixtures.broker", "tests.fixtures.databases"]
