"""The benchmark scripts under bench/, run at tiny sizes: they run end to end and their figures are sane."""
