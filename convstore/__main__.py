from convstore.cli import main

main()
