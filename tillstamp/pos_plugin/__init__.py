"""tillstamp.pos_plugin."""
