from xnetmap.cli import main

main()
