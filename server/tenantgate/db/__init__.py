"""Installing tenantgate's SQL into a database, managing its context keys, linting RLS setups."""
