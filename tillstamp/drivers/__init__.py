"""tillstamp.drivers."""
