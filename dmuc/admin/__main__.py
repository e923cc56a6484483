"""`python -m dmuc.admin`: the same as the dmuc-admin console script."""

from dmuc.admin.cli import main

if __name__ == "__main__":
    main()
