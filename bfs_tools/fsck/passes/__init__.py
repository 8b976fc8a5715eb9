"""One module per check pass; runner.PASSES gives their order and stable ids."""
