"""``gigapulse report``: a self-contained HTML report per plant, with PNG figures, from the warehouse."""

from transforms.batch.report.build import SECTIONS, ReportContext, build_report, plant_sites

__all__ = ["SECTIONS", "ReportContext", "build_report", "plant_sites"]
