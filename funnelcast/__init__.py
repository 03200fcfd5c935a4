"""funnelcast's command line: a thin shell over features, training and serving."""
