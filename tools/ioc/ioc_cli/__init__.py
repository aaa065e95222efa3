"""`ioc`: the operators' command for the IOC event backbone."""
