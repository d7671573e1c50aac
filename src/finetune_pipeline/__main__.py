import sys

from finetune_pipeline.cli.pipeline import main

if __name__ == "__main__":  # not when the server's inference process (spawn) imports this module
    sys.exit(main())
