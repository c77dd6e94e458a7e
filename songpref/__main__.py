from songpref.cli import main

main()
