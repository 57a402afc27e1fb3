from mergekit_fw.cli.main import main

main()
