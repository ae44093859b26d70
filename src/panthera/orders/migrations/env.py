from panthera.kernel.migrations import run_env
from panthera.orders.models import Base

run_env(Base.metadata)
