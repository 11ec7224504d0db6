from stbench.cli import main

main()
