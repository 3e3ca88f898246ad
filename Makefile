# napari-spatialmix: the two set-up commands of the README are `make demo` and `make test`.
# Both create .venv with Python 3.11 and install the package with the GUI and test extras, pinning
# torch==2.13.0 through constraints.txt (any other torch pulls several GB of CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= demo_out
PYTEST_ARGS ?=
XVFB_DEBS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 \
	libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3

.PHONY: install demo test xvfb seurat-data clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python3-venv >/dev/null && rm -rf $(VENV) && \
	  $(PYTHON) -m venv $(VENV); }
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[gui,test]"
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

install: $(VENV)/.installed

# The headless main job on the bundled sample data.
demo: install
	$(VENV)/bin/spatialmix demo --out $(OUT)

# Debian's Xvfb (and the xcb libraries Qt needs) for the GUI tests; skipped when already there.
xvfb:
	@command -v Xvfb >/dev/null 2>&1 && ldconfig -p | grep -q libxcb-icccm.so.4 || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(XVFB_DEBS) >/dev/null; }

test: install xvfb
	$(VENV)/bin/npe2 validate napari-spatialmix
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra --durations=10 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
