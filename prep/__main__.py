from prep.console import main

main()
