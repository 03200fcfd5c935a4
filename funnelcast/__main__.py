from funnelcast.cli import main

main()
