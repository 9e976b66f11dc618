"""tillstamp.loyalty."""
