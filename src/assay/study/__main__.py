from assay.study.cli import main

main()
