"""`python -m meddenoise ...` is the `meddenoise` command; torchrun starts training this way:

torchrun --nproc-per-node 2 -m meddenoise train CONFIG
"""

from meddenoise.cli import main

if __name__ == "__main__":
    main()
