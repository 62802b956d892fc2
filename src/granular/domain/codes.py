"""The I-REC codes a device may carry: energy sources (`fuelCode`) and technologies
(`deviceTypeCode`), each with its name.

One list, used three ways: `parse_device` refuses a code that is not here (its error lists
the valid ones), `GET /codes` serves the lists, and a client builds its drop-downs from
that answer. The codes are the I-REC(E) Code's energy source and technology codes as the
D-REC platform and Energy Web's I-REC integration list them; the D-REC programme itself
certifies solar (ES100 with TC110-TC150), the rest is accepted for the other devices a
registry holds (wind, hydro, biomass, ...).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

FUEL_CODES: Final = MappingProxyType(
    {
        "ES100": "Solar",
        "ES200": "Wind",
        "ES300": "Hydro-electric",
        "ES410": "Marine: Tidal",
        "ES420": "Marine: Wave",
        "ES430": "Marine: Current",
        "ES440": "Marine: Vertical pressure",
        "ES510": "Biomass solid: Municipal waste",
        "ES520": "Biomass solid: Industrial and commercial waste",
        "ES530": "Biomass solid: Forestry products",
        "ES540": "Biomass solid: Forestry by-products and waste",
        "ES550": "Biomass solid: Animal fats",
        "ES560": "Biomass solid: Agricultural products",
        "ES570": "Biomass solid: Agricultural by-products and waste",
        "ES610": "Biomass liquid: Municipal biodegradable waste",
        "ES620": "Biomass liquid: Black liquor",
        "ES630": "Biomass liquid: Pure plant oil",
        "ES650": "Biomass liquid: Waste plant oil",
        "ES660": "Biomass liquid: Refined vegetable oil",
        "ES670": "Biomass liquid: Biodiesel (mono-alkyl ester)",
        "ES680": "Biomass liquid: Biogasoline (C6-C12 hydrocarbon)",
        "ES710": "Biogas: Landfill gas",
        "ES720": "Biogas: Sewage gas",
        "ES730": "Biogas: Gas from organic waste digestion",
        "ES740": "Biogas: Biogenic process gas",
        "ES810": "Renewable heat: Geothermal",
        "ES820": "Renewable heat: Aerothermal",
        "ES830": "Renewable heat: Hydrothermal",
        "ES840": "Renewable heat: Biogenic process heat",
        "ES910": "Co-fired with fossil: Municipal solid waste, biomass fraction",
        "ES920": "Co-fired with fossil: Industrial and commercial waste, biomass fraction",
        "ES930": "Co-fired with fossil: Waste wood",
        "ES940": "Co-fired with fossil: Forestry products",
        "ES950": "Co-fired with fossil: Forestry by-products and waste",
        "ES960": "Co-fired with fossil: Animal fats",
        "ES970": "Co-fired with fossil: Agricultural products, biomass fraction",
        "ES980": "Co-fired with fossil: Agricultural by-products and waste, biomass fraction",
        "ES990": "Co-fired with fossil: Solar thermal concentration",
    }
)

DEVICE_TYPE_CODES: Final = MappingProxyType(
    {
        "TC110": "Solar PV: Ground mounted",
        "TC120": "Solar PV: Roof mounted (single installation)",
        "TC130": "Solar PV: Floating",
        "TC140": "Solar PV: Aggregated",
        "TC150": "Solar thermal concentration",
        "TC210": "Wind: Onshore",
        "TC220": "Wind: Offshore",
        "TC310": "Hydro: Dam",
        "TC320": "Hydro: Run of river",
        "TC330": "Hydro: Pumped storage (natural in-flow only)",
        "TC410": "Combined cycle gas turbine with heat recovery: non-CHP",
        "TC411": "Combined cycle gas turbine with heat recovery: CHP",
        "TC421": "Steam turbine with back-pressure turbine (open cycle): non-CHP",
        "TC422": "Steam turbine with back-pressure turbine (open cycle): CHP",
        "TC423": "Steam turbine with condensation turbine (closed cycle): non-CHP",
        "TC424": "Steam turbine with condensation turbine (closed cycle): CHP",
        "TC431": "Gas turbine with heat recovery: non-CHP",
        "TC432": "Gas turbine with heat recovery: CHP",
        "TC441": "Internal combustion engine: non-CHP",
        "TC442": "Internal combustion engine: CHP",
        "TC451": "Micro-turbine: non-CHP",
        "TC452": "Micro-turbine: CHP",
        "TC461": "Stirling engine: non-CHP",
        "TC462": "Stirling engine: CHP",
        "TC471": "Fuel cell: non-CHP",
        "TC472": "Fuel cell: CHP",
        "TC481": "Steam engine: non-CHP",
        "TC482": "Steam engine: CHP",
        "TC491": "Organic Rankine cycle: non-CHP",
        "TC492": "Organic Rankine cycle: CHP",
    }
)

# The D-REC programme's subset (solar only), for clients that build a D-REC form.
DREC_FUEL_CODES: Final = ("ES100", "ES990")
DREC_DEVICE_TYPE_CODES: Final = ("TC110", "TC120", "TC130", "TC140", "TC150")
