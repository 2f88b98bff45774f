"""Every plotly figure the pages draw, as pure functions of tables, cards and stored results."""
