from xaitk_exp.cli import main

main()
