"""Pure routing rules: no database, broker or network code may be imported here."""
