from assay.compare.cli import main

main()
