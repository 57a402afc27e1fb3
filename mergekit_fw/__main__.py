from mergekit_fw.cli import main

main()
