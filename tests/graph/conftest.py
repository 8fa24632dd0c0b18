import sys
from pathlib import Path

# the test nets are shared with the compression tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compress"))
