"""A preload module that takes a long time to import (a worker still starting)."""

import time

time.sleep(60)
