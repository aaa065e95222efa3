"""sync-province: the district IOC's shared datasets and reports, mirrored to the provincial IOC."""
