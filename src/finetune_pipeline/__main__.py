import sys

from finetune_pipeline.cli import main

sys.exit(main())
