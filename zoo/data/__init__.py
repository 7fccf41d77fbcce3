"""Datamodules and the mini-dataset generators that write the real on-disk formats."""
