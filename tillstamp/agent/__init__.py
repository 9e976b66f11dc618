"""tillstamp.agent."""
