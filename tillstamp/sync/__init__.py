"""tillstamp.sync."""
