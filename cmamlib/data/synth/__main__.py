"""``python -m cmamlib.data.synth``: write the synthetic benchmark."""

from .writers import main

if __name__ == "__main__":
    main()
