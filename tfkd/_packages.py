"""Files that pip packages install (data sets, weights, class names), found without
importing the package: several pin old dependencies (numpy<2, TF 2.15, torch) and are
installed with `--no-deps`, so importing them could fail or load what tfkd does not need."""

import importlib.util
import pathlib


def package_dir(package):
    """The folder of the installed `package`, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def package_files(package, relative_paths, install_command, what="Data files"):
    """The paths of `relative_paths` inside the installed `package`.

    Raises:
        FileNotFoundError: the package is not installed, or lacks one of the files; the
            message names them and gives `install_command`.
    """
    folder = package_dir(package)
    if folder is not None:
        paths = tuple(folder / path for path in relative_paths)
        missing = [str(path) for path in relative_paths if not (folder / path).is_file()]
        if not missing:
            return paths
        problem = f"{missing} missing from {str(folder)!r}"
    else:
        problem = f"the package {package!r} is not installed"
    raise FileNotFoundError(f"{what} not found: {problem}. Install them with `{install_command}`.")
