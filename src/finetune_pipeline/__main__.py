import sys

from finetune_pipeline.cli.pipeline import main

sys.exit(main())
