"""The labs: one module per lab, each training its models through the same run path (`scalelab lab NAME`)."""
