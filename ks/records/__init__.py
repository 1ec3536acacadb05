"""Records: the tables, the host record, the history writer, units of work, migrations, counters."""
