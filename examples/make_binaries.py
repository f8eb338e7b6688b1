#!/usr/bin/env python3
"""Regenerate the binary / non-UTF-8 files of the example corpus.

The example corpus under ``examples/corpus/`` describes the fictional company
"Northwind Precision Manufacturing" and its Shanghai subsidiary.  Plain-text
formats (Markdown, HTML, CSV, UTF-8 TXT) are checked in as they are; the files
produced here are generated from the text held in this script:

* PDF  (reportlab, text layer, multi-page; Chinese via the built-in CID font
  ``STSong-Light``, so no font file is needed)
    - finance/q3_2026_results_summary.pdf
    - product/nw5000_spec_sheet.pdf
    - china/员工休假制度.pdf
* DOCX (python-docx, real Heading styles)
    - policies/code_of_conduct.docx
    - hr/onboarding_guide.docx
    - finance/vendor_payment_procedure.docx
    - china/上海办公室信息安全规定.docx
* XLSX (openpyxl)
    - hr/salary_bands.xlsx
* TXT encoded in GBK (not UTF-8)
    - china/通知.txt

Requirements: ``pip install reportlab python-docx openpyxl``.

Usage::

    python examples/make_binaries.py [--out examples/corpus]

All content is fictional.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

# Fixed timestamp so that regenerated files carry stable metadata.
FIXED_TIME = _dt.datetime(2026, 10, 20, 9, 0, 0)

# ---------------------------------------------------------------------------
# Document model: a list of blocks
#   ("h1", text) ("h2", text) ("h3", text) ("p", text) ("ul", [items])
#   ("ol", [items]) ("table", [header_row, row, ...]) ("pagebreak",)
# ---------------------------------------------------------------------------

Q3_RESULTS = {
    "title": "Q3 2026 Results Summary",
    "header": "Northwind Precision Manufacturing GmbH  |  Q3 2026 Results Summary  |  RESTRICTED - Finance only",
    "blocks": [
        ("h1", "Q3 2026 Results Summary"),
        ("p", "Prepared by: Finance & Controlling, Augsburg. Date: 16 October 2026. "
              "Audience: Executive Board, Supervisory Board, finance department. "
              "Reporting period: 1 July to 30 September 2026. All figures unaudited, in EUR."),
        ("h2", "1. Highlights"),
        ("ul", [
            "Q3 2026 revenue was EUR 48.2 million, up 9.0% from EUR 44.2 million in Q3 2025.",
            "Gross margin improved to 34.7% (Q3 2025: 33.1%), driven by a higher share of service business "
            "and lower bearing purchase prices.",
            "EBIT reached EUR 6.1 million, an EBIT margin of 12.7% (Q3 2025: EUR 4.7 million, 10.6%).",
            "Order intake was EUR 52.6 million; book-to-bill ratio 1.09. Order backlog at 30 September: "
            "EUR 71.3 million.",
            "Free cash flow was EUR 3.4 million. Cash and cash equivalents at quarter end: EUR 21.7 million.",
            "Headcount at 30 September 2026: 618 employees (30 June 2026: 604).",
        ]),
        ("h2", "2. Income statement (condensed)"),
        ("table", [
            ["EUR million", "Q3 2026", "Q3 2025", "Change"],
            ["Revenue", "48.2", "44.2", "+9.0%"],
            ["Cost of sales", "-31.5", "-29.6", ""],
            ["Gross profit", "16.7", "14.6", "+14.4%"],
            ["Gross margin", "34.7%", "33.1%", "+1.6 pp"],
            ["Research & development", "-4.3", "-4.0", ""],
            ["Sales & marketing", "-3.9", "-3.6", ""],
            ["General & administration", "-2.4", "-2.3", ""],
            ["EBIT", "6.1", "4.7", "+29.8%"],
            ["Financial result", "-0.2", "-0.3", ""],
            ["Income taxes", "-1.7", "-1.3", ""],
            ["Net income", "4.2", "3.1", "+35.5%"],
        ]),
        ("p", "Cost of sales grew more slowly than revenue. Material costs benefited from the new frame "
              "agreement for hybrid ceramic bearings that took effect on 1 July, and the assembly line "
              "in Augsburg ran at high utilisation without additional shifts."),
        ("pagebreak",),
        ("h2", "3. Revenue by product line"),
        ("table", [
            ["Product line", "Q3 2026 (EUR m)", "Share", "Q3 2025 (EUR m)"],
            ["NW-5000 spindles", "18.3", "38%", "16.9"],
            ["NW-3200 spindles", "9.6", "20%", "9.8"],
            ["SpindleSense & electronics", "4.8", "10%", "3.9"],
            ["Service, repair & spare parts", "15.5", "32%", "13.6"],
            ["Total", "48.2", "100%", "44.2"],
        ]),
        ("p", "The NW-5000 remained the largest product line. Demand came mainly from 5-axis machining-centre "
              "builders in Germany, Italy and China. NW-3200 revenue was slightly lower because one large "
              "automation customer moved deliveries into Q4. Service revenue grew 14%, helped by the exchange-"
              "spindle programme and the expansion of the Shanghai service centre."),
        ("h2", "4. Revenue by region"),
        ("table", [
            ["Region", "Q3 2026 (EUR m)", "Q3 2025 (EUR m)"],
            ["Germany", "15.1", "14.6"],
            ["Rest of Europe", "17.4", "16.3"],
            ["China (Shanghai subsidiary)", "8.9", "7.7"],
            ["Rest of Asia", "3.6", "3.0"],
            ["Americas", "3.2", "2.6"],
            ["Total", "48.2", "44.2"],
        ]),
        ("p", "The Shanghai subsidiary contributed EUR 8.9 million (CNY 68.5 million), about 18% of group "
              "revenue. Its gross margin of 31.2% is below the group average because a larger share of its "
              "revenue comes from trading NW-series spindles manufactured in Augsburg."),
        ("h2", "5. Operating expenses"),
        ("p", "R&D expenses rose to EUR 4.3 million, mainly due to the development of the next-generation "
              "SpindleSense controller and additional test-bench capacity. Sales & marketing expenses include "
              "EUR 0.6 million for the EMO trade fair. General & administration costs were stable."),
        ("pagebreak",),
        ("h2", "6. Cash flow and balance sheet"),
        ("table", [
            ["EUR million", "Q3 2026", "Q3 2025"],
            ["Operating cash flow", "5.9", "4.4"],
            ["Capital expenditure", "-2.5", "-3.1"],
            ["Free cash flow", "3.4", "1.3"],
            ["Cash at end of quarter", "21.7", "16.2"],
            ["Net working capital", "38.9", "37.5"],
            ["Days sales outstanding", "61", "66"],
        ]),
        ("p", "Capital expenditure was mainly for a second balancing machine and the replacement of two "
              "grinding machines in spindle-shaft production. Inventory increased by EUR 1.1 million because "
              "bearings were purchased in advance ahead of announced price increases."),
        ("h2", "7. Nine-month view"),
        ("p", "Revenue for the first nine months of 2026 was EUR 139.6 million (Q1: 44.9, Q2: 46.5, Q3: 48.2), "
              "compared with EUR 128.4 million in the same period of 2025. Nine-month EBIT was EUR 16.8 million."),
        ("h2", "8. Outlook for fiscal year 2026"),
        ("ul", [
            "The Executive Board confirms the revenue outlook of EUR 185-190 million for fiscal year 2026.",
            "The EBIT margin is expected at 12-13%.",
            "Q4 revenue depends on the timing of two large machine-builder orders in Italy and China.",
        ]),
        ("h2", "9. Risks"),
        ("ul", [
            "Weaker investment by automotive suppliers in Europe could reduce Q4 order intake.",
            "Delivery times for hybrid ceramic bearings remain long (14-18 weeks).",
            "Exchange-rate movements of the Chinese yuan affect reported revenue of the Shanghai subsidiary.",
        ]),
        ("p", "This document contains unpublished financial information. Do not forward it outside the "
              "recipients listed above. Questions: Felix Dorn, Head of Finance & Controlling, extension 2200."),
    ],
}

NW5000_SPEC = {
    "title": "NW-5000 High-Speed Motor Spindle - Specification Sheet",
    "header": "Northwind Precision Manufacturing  |  NW-5000 Specification Sheet  |  Rev. D, September 2026",
    "blocks": [
        ("h1", "NW-5000 High-Speed Motor Spindle"),
        ("p", "Specification sheet, revision D, September 2026. The NW-5000 is a high-speed motor spindle for "
              "5-axis machining centres, designed for milling aluminium, steel, titanium and hardened mould "
              "steels. It combines a synchronous motor with hybrid ceramic bearings, oil-air lubrication and "
              "the SpindleSense monitoring controller."),
        ("h2", "Key features"),
        ("ul", [
            "Maximum speed 24,000 rpm with full continuous-duty capability.",
            "HSK-A63 tool interface with 18 kN clamping force.",
            "Hybrid ceramic angular-contact bearings with oil-air lubrication for long life at high speed.",
            "Integrated sensors for temperature, vibration and drawbar position, evaluated by SpindleSense.",
            "Runout at the taper of 2 um or better.",
        ]),
        ("h2", "Technical data"),
        ("table", [
            ["Parameter", "Value"],
            ["Maximum speed", "24,000 rpm"],
            ["Base speed", "3,600 rpm"],
            ["Rated power S1 (100%)", "15 kW"],
            ["Rated power S6 (40%)", "20 kW"],
            ["Rated torque S1", "40 Nm"],
            ["Peak torque S6 (40%)", "53 Nm"],
            ["Motor type", "Synchronous, permanent magnet"],
            ["Supply voltage (drive)", "400 V AC"],
            ["Tool interface", "HSK-A63 (ISO 12164)"],
            ["Clamping force", "18 kN"],
            ["Tool change time (clamp/unclamp)", "< 0.4 s"],
            ["Runout at taper", "<= 2 um"],
            ["Housing diameter", "170 mm"],
            ["Weight", "38 kg"],
        ]),
        ("pagebreak",),
        ("h2", "Bearings and lubrication"),
        ("p", "The shaft runs in four hybrid ceramic angular-contact bearings (two at the front, two at the rear) "
              "with spring preload. Oil-air lubrication supplies a small, constant amount of oil to each bearing. "
              "The lubrication unit must provide clean, dry compressed air at 5 to 6 bar. Sealing air at a "
              "minimum of 1.5 bar protects the front bearings against coolant and chips."),
        ("h2", "Cooling"),
        ("table", [
            ["Parameter", "Requirement"],
            ["Coolant", "Water with corrosion inhibitor"],
            ["Flow rate", "min. 8 L/min"],
            ["Inlet temperature", "20 C +/- 2 C"],
            ["Cooling capacity", "min. 3 kW"],
            ["Through-spindle coolant (option)", "up to 70 bar, filtered to 10 um"],
        ]),
        ("h2", "Sensors and monitoring"),
        ("ul", [
            "Motor winding temperature: PT1000 sensor.",
            "Front bearing temperature: PT1000 sensor.",
            "Vibration: piezoelectric acceleration sensor, evaluated as vibration velocity (mm/s).",
            "Drawbar position: analogue sensor for states unclamped / clamped with tool / clamped without tool.",
            "Encoder: sin/cos, 256 periods per revolution.",
            "SpindleSense controller with PROFINET or EtherCAT interface; OPC UA from firmware 3.2.0.",
        ]),
        ("h2", "Operating conditions"),
        ("p", "Ambient temperature 10 to 40 C. Run the 15-minute warm-up program after every standstill longer "
              "than two hours. Operating the spindle without cooling, lubrication or sealing air voids the "
              "warranty."),
        ("pagebreak",),
        ("h2", "Variants and ordering codes"),
        ("table", [
            ["Ordering code", "Description"],
            ["NW-5000-24-A63", "Standard version, 24,000 rpm, HSK-A63"],
            ["NW-5000-24-A63-IC", "Standard version with through-spindle coolant, 70 bar"],
            ["NW-5000-18-A63-HT", "High-torque winding, 18,000 rpm, 65 Nm S1"],
            ["NW-5000-24-A63-S", "S-variant with increased S6 power (24 kW)"],
            ["SS-CTRL-C", "SpindleSense controller, hardware revision C"],
        ]),
        ("h2", "Installation requirements"),
        ("ol", [
            "Mount the spindle in a bore with tolerance H6, clamping the housing only at the marked flange.",
            "Connect cooling before the first start; check flow and temperature.",
            "Connect oil-air lubrication and sealing air; allow the lubrication unit to run 10 minutes before the "
            "first start.",
            "Connect power, encoder and sensor cables; check the SpindleSense status page.",
            "Run the running-in program supplied with the spindle (about 2 hours).",
        ]),
        ("h2", "Warranty and service"),
        ("p", "Warranty: 24 months or 12,000 operating hours, whichever comes first. Exchange spindles are "
              "available within 48 hours in Europe and 72 hours in China for customers with a service "
              "contract. Overhauls are performed in Augsburg and at the Shanghai service centre."),
        ("p", "Northwind Precision Manufacturing GmbH, Augsburg, Germany. sales@northwind-pm.example. "
              "Technical data subject to change without notice."),
    ],
}

LEAVE_CN = {
    "title": "员工休假制度",
    "header": "诺风精密制造（上海）有限公司  |  员工休假制度  |  2026 年版",
    "blocks": [
        ("h1", "员工休假制度"),
        ("p", "适用范围：诺风精密制造（上海）有限公司全体员工。制定部门：人事行政部。自 2026 年 1 月 1 日起施行。"
              "本制度依据《中华人民共和国劳动法》、《职工带薪年休假条例》及上海市相关规定制定。"
              "德国总部员工适用总部的休假政策。"),
        ("h2", "第一章 带薪年休假"),
        ("ul", [
            "公司正式员工每年享有 15 天带薪年休假，高于法定标准（累计工作满 1 年不满 10 年的为 5 天，"
            "满 10 年不满 20 年的为 10 天，满 20 年的为 15 天）。",
            "新入职员工试用期满后开始享受年假，当年年假按剩余日历天数折算，不足一天的部分不计。",
            "年假原则上应在当年内休完。因工作原因未休完的，最多可顺延 5 天至次年 3 月 31 日，逾期作废。",
            "员工申请年假，应至少提前 5 个工作日在 OA 系统中提交申请，连续休假超过 5 天的应提前两周申请。",
            "年假可以分段休，但每次不少于半天。",
        ]),
        ("h2", "第二章 病假"),
        ("ul", [
            "员工因病不能上班的，应在当天上午 9:00 前通知直属上级，并在返岗后 3 个工作日内补办请假手续。",
            "病假 2 天以上（含 2 天）须提供二级及以上医院出具的病假证明。",
            "病假期间工资按上海市相关规定及公司薪酬制度执行，且不低于当地最低工资标准的 80%。",
        ]),
        ("pagebreak",),
        ("h2", "第三章 婚假、产假及陪产假"),
        ("table", [
            ["假期类别", "天数", "说明"],
            ["婚假", "10 天", "含法定 3 天及上海市延长婚假 7 天，须在领证后一年内休完"],
            ["产假", "158 天", "含法定产假 98 天及上海市延长产假 60 天；难产或多胞胎按规定增加"],
            ["陪产假", "10 天", "配偶生育时享有，须在配偶生育后 30 天内休完"],
            ["育儿假", "每年 5 天", "子女满三周岁前，夫妻双方每年各享有"],
            ["丧假", "3 天", "直系亲属（父母、配偶、子女）去世"],
        ]),
        ("p", "以上假期均为带薪假期，期间工资照发。员工申请上述假期时，须提供结婚证、出生医学证明等相关证明材料。"),
        ("h2", "第四章 事假"),
        ("ul", [
            "员工因私事需请假的，应先使用年假；年假用完后方可申请事假。",
            "事假为无薪假期，每年累计一般不超过 10 天。",
            "事假须事先经直属上级批准，紧急情况可事后补办手续。",
        ]),
        ("h2", "第五章 法定节假日与调休"),
        ("p", "公司按照国务院公布的全国法定节假日安排放假。节假日期间安排加班的，按国家规定支付加班工资或安排调休。"
              "调休须在加班后三个月内使用完毕。"),
        ("h2", "第六章 请假流程"),
        ("ol", [
            "员工在 OA 系统中提交请假申请，注明假期类别、起止时间及工作交接安排。",
            "直属上级在 2 个工作日内审批；连续请假超过 10 天的，须经总经理审批。",
            "人事行政部每月汇总考勤和假期数据，作为工资核算依据。",
        ]),
        ("p", "未经批准擅自离岗的，按旷工处理。本制度由人事行政部负责解释。如有疑问，请联系人事行政部：hr-cn@northwind-pm.example，分机 8300。"),
    ],
}

CODE_OF_CONDUCT = {
    "title": "Code of Conduct",
    "blocks": [
        ("h1", "Code of Conduct"),
        ("p", "Northwind Precision Manufacturing GmbH and all subsidiaries, including Northwind Precision "
              "Manufacturing (Shanghai) Co., Ltd. Approved by the Executive Board, version 2.0, January 2026."),
        ("h2", "1. A message from the Executive Board"),
        ("p", "Our customers trust us with the heart of their machines. That trust depends not only on the quality "
              "of our spindles but on the way we behave: honestly, fairly and lawfully. This Code describes what "
              "we expect from everyone who works for Northwind - employees, managers, board members, temporary "
              "staff and interns - in every country where we operate."),
        ("h2", "2. Respect in the workplace"),
        ("p", "We treat each other with respect. Discrimination or harassment because of gender, origin, religion, "
              "disability, age, sexual orientation or any other personal characteristic is not tolerated. "
              "Managers have a special duty to create a working environment in which people can raise concerns "
              "without fear."),
        ("h2", "3. Health and safety"),
        ("p", "Safety comes before output and deadlines. Everyone may stop a machine or a task that they consider "
              "unsafe. Accidents and near misses must be reported the same day so that we can learn from them."),
        ("h2", "4. Conflicts of interest"),
        ("p", "Business decisions must be made in the interest of the company, not for personal benefit. Tell your "
              "manager and HR in writing if you, or a close relative, have a financial interest in a supplier, "
              "customer or competitor, or if you take on a side job. Having a conflict is not wrong in itself; "
              "hiding it is."),
        ("h2", "5. Gifts, hospitality and anti-bribery"),
        ("ul", [
            "We never offer, promise or accept bribes, kickbacks or facilitation payments, directly or through "
            "agents.",
            "Gifts may be accepted or given only if they are of modest value: up to EUR 50 per person and "
            "occasion (in China: up to CNY 400). Cash and cash equivalents are never allowed.",
            "Invitations to meals or events must have a clear business purpose and a reasonable scope. "
            "Invitations that include travel or overnight stays require approval by the Compliance Officer.",
            "Gifts and invitations involving public officials always require prior approval by the Compliance "
            "Officer.",
        ]),
        ("h2", "6. Fair competition"),
        ("p", "We compete on the quality and price of our products. We do not agree prices, customers or markets "
              "with competitors, and we do not exchange sensitive information with them, including at trade "
              "fairs and industry association meetings."),
        ("h2", "7. Export control"),
        ("p", "High-speed spindles can be subject to export-control rules. Every export order is checked by the "
              "export-control team before confirmation. Never split orders or use intermediaries to avoid a check."),
        ("h2", "8. Confidential information and data protection"),
        ("p", "Protect confidential information of Northwind, our customers and our suppliers, including drawings, "
              "prices, salaries and unpublished financial figures. Process personal data only for legitimate "
              "purposes and according to the data-protection rules. The IT Security & Password Policy applies."),
        ("h2", "9. Speaking up"),
        ("p", "If you see something that may breach this Code or the law, speak up. You can contact your manager, "
              "HR, the Compliance Officer, or the confidential ethics line at ethics@northwind-pm.example, which "
              "also accepts anonymous reports. Retaliation against anyone who raises a concern in good faith is "
              "itself a serious breach of this Code."),
        ("h2", "10. Consequences"),
        ("p", "Violations of this Code can lead to disciplinary action up to termination of employment, and may "
              "have consequences under criminal or civil law."),
    ],
}

ONBOARDING = {
    "title": "Onboarding Guide for New Employees",
    "blocks": [
        ("h1", "Onboarding Guide for New Employees"),
        ("p", "Welcome to Northwind Precision Manufacturing! This guide explains what happens during your first "
              "weeks at the Augsburg site and what you need to do. It is maintained by HR and shared with new "
              "employees, their managers and their onboarding buddies."),
        ("h2", "Before your first day"),
        ("ul", [
            "Return your signed contract and the personnel questionnaire to HR.",
            "Send a passport-style photo for your access badge to hr@northwind-pm.example.",
            "Your manager orders your laptop and phone at least ten working days before you start.",
            "You receive an e-mail with your start time, your buddy's name and a map of the site.",
        ]),
        ("h2", "Your first day"),
        ("p", "Please arrive at 08:30 at the reception of Building A. An HR colleague will welcome you, hand out "
              "your badge and accompany you through the administrative steps. The IT Service Desk sets up your "
              "laptop, password and multi-factor authentication with you; please bring your company phone or "
              "collect it at reception. Lunch on the first day is with your team and your buddy."),
        ("h2", "Your onboarding buddy"),
        ("p", "Every new employee has a buddy from a neighbouring team. Your buddy shows you around the site, "
              "explains how things really work, and is your first contact for small questions during the first "
              "three months. Buddies are volunteers and receive half a day of training."),
        ("h2", "Mandatory trainings"),
        ("p", "The following trainings must be completed within the first 14 days. They are assigned "
              "automatically in the learning portal."),
        ("ul", [
            "Occupational safety induction (in person, 2 hours; required before entering the shop floor).",
            "Code of Conduct and anti-bribery (e-learning, 45 minutes).",
            "IT security awareness and phishing (e-learning, 30 minutes).",
            "Data protection basics (e-learning, 30 minutes).",
            "Export control basics (only for sales, service and logistics).",
        ]),
        ("h2", "The first weeks"),
        ("p", "During the first week you meet the key people in your department and visit the assembly line and "
              "the spindle test centre, so that you understand how our products are made and tested. Engineers "
              "spend one full day with the assembly team. In week two, your manager agrees your goals for the "
              "probation period with you."),
        ("h2", "Probation period and feedback"),
        ("p", "The probation period is six months. You and your manager hold structured feedback talks at the "
              "end of the first, third and fifth month. The talks are documented in the HR portal. If something "
              "does not work as expected, raise it early - with your manager, your buddy or your HR Business "
              "Partner."),
        ("h2", "Useful contacts"),
        ("table", [
            ["Topic", "Contact"],
            ["Contract, payroll, leave", "HR Service Team, extension 2300"],
            ["Laptop, passwords, access", "IT Service Desk, extension 4357"],
            ["Badge, parking, canteen", "Facility Management, extension 1100"],
            ["Travel booking and expenses", "Travel team, extension 2240"],
        ]),
        ("p", "We are glad you are here. Enjoy your start at Northwind!"),
    ],
}

VENDOR_PAYMENT = {
    "title": "Vendor Payment Procedure",
    "blocks": [
        ("h1", "Vendor Payment Procedure"),
        ("p", "Owner: Finance & Controlling (Accounts Payable). Classification: Restricted - finance department. "
              "Version 1.4, effective 1 April 2026. Applies to Northwind Precision Manufacturing GmbH; the "
              "Shanghai subsidiary has a local procedure aligned with these principles."),
        ("h2", "1. Purpose"),
        ("p", "This procedure ensures that suppliers are paid correctly and on time, that we only pay for goods "
              "and services that we ordered and received, and that payment fraud is prevented."),
        ("h2", "2. Creating and changing vendor master data"),
        ("ul", [
            "New vendors are created only by the master-data team, based on a request from Purchasing with the "
            "vendor's registration documents and bank confirmation.",
            "Every change of bank details must be verified by a call-back to a phone number already on file - "
            "never to a number given in the change request itself.",
            "Master-data changes are released by a second person (four-eyes principle). Accounts Payable staff "
            "cannot change vendor master data.",
        ]),
        ("h2", "3. Three-way match"),
        ("p", "Before an invoice is approved, the ERP system matches the purchase order, the goods receipt and the "
              "invoice. Differences of up to 2% or EUR 200 (whichever is lower) are accepted automatically. "
              "Larger differences are clarified by the buyer within five working days. Invoices without a "
              "purchase order are only allowed for the categories listed in the annex (e.g. utilities, fees)."),
        ("h2", "4. Approval limits"),
        ("table", [
            ["Invoice amount (net)", "Approval required"],
            ["up to EUR 10,000", "Cost-centre manager"],
            ["EUR 10,000 - 50,000", "Department head"],
            ["EUR 50,000 - 250,000", "CFO"],
            ["above EUR 250,000", "CFO and CEO jointly"],
        ]),
        ("h2", "5. Payment terms and payment runs"),
        ("ul", [
            "Standard payment term: 45 days net from invoice date.",
            "Early-payment discounts (typically 2% within 10 days) are always taken when offered.",
            "Payment runs take place every Thursday. Invoices approved by Tuesday 12:00 are included.",
            "The payment file is released in the banking system by two authorised signatories.",
        ]),
        ("h2", "6. Urgent and manual payments"),
        ("p", "Urgent payments outside the weekly run need written approval by the Head of Finance & Controlling "
              "and must be documented with a reason. Requests for urgent payments that arrive by e-mail and claim "
              "to come from a board member must be confirmed by phone - this is a common fraud pattern (so-called "
              "CEO fraud)."),
        ("h2", "7. Month-end and controls"),
        ("p", "At month end, Accounts Payable reconciles the vendor ledger with the general ledger. Controlling "
              "reviews open purchase orders and accrues goods received but not invoiced. Internal Audit tests "
              "this procedure at least once a year."),
        ("h2", "8. Contact"),
        ("p", "Accounts Payable: ap@northwind-pm.example, extension 2210."),
    ],
}

INFOSEC_CN = {
    "title": "上海办公室信息安全规定",
    "blocks": [
        ("h1", "上海办公室信息安全规定"),
        ("p", "适用范围：诺风精密制造（上海）有限公司全体员工、外包人员及实习生。本规定是集团《IT Security & Password "
              "Policy》在上海办公室的补充说明，二者不一致时以较严格的要求为准。发布日期：2026 年 2 月 1 日。"),
        ("h2", "一、账号与密码"),
        ("ul", [
            "密码长度至少 14 位，建议使用由多个词语组成的密码短语。",
            "公司账号密码不得在其他任何网站或系统中重复使用。",
            "不得将密码告诉任何人，包括上级和 IT 人员。IT 部门不会通过电话或邮件索要密码。",
            "连续 10 次登录失败，账号将被锁定 15 分钟。",
            "邮箱、VPN、ERP 及人事系统必须启用多因素认证（MFA）。",
        ]),
        ("h2", "二、电脑与移动设备"),
        ("ul", [
            "离开座位时必须锁屏；电脑闲置 5 分钟后自动锁屏。",
            "只有公司管理的电脑和手机才能访问公司数据。",
            "U 盘等移动存储设备默认禁用。车间机床数据传输确需使用的，须向 IT 部门申请。",
            "设备丢失或被盗，须在 1 小时内报告 IT 服务台。",
        ]),
        ("h2", "三、客户图纸与技术资料"),
        ("p", "客户提供的图纸、工艺参数和维修记录属于“受限”级别信息，只能保存在公司指定的服务器和系统中，"
              "不得通过个人微信、个人邮箱或公共网盘传输。向客户发送资料须使用公司邮箱或公司批准的文件传输平台。"),
        ("h2", "四、网络与远程访问"),
        ("p", "在公司以外办公时，必须通过公司 VPN 访问内部系统。禁止在公共场所的开放 Wi-Fi 下处理机密资料。"
              "服务中心的主轴测试台和 SpindleSense 网关位于独立的生产网络，未经授权不得接入个人设备。"),
        ("h2", "五、钓鱼邮件"),
        ("p", "收到要求登录、打开附件、修改银行账户或紧急付款的可疑邮件时，请使用 Outlook 中的“报告钓鱼邮件”按钮，"
              "或转发至 security@northwind-pm.example。即使已误点链接，也请立即报告，公司不会因此追究报告人的责任。"),
        ("h2", "六、违规处理"),
        ("p", "违反本规定的，公司将视情节轻重给予警告、通报批评直至解除劳动合同；造成损失的，依法追究责任。"
              "如有疑问，请联系 IT 服务台，分机 8400。"),
    ],
}

NOTICE_GBK = """\
诺风精密制造（上海）有限公司

关于 2026 年国庆节放假及售后服务安排的通知

各部门、全体员工：

根据公司年度假期安排，现将 2026 年国庆节放假及相关工作安排通知如下：

一、放假时间
10 月 1 日（星期四）至 10 月 7 日（星期三）放假，共 7 天。9 月 27 日（星期日）正常上班。

二、售后服务安排
放假期间，上海服务中心安排工程师轮流值班，客户紧急维修需求请拨打服务热线。
值班期间可提供远程诊断和交换主轴发货服务，交换主轴在接到订单后 72 小时内发出。
值班工程师名单由服务中心经理刘浩另行通知。

三、安全检查
各部门在放假前一天下班前，须关闭电脑、打印机等办公设备电源，关好门窗。
服务中心须确认所有主轴测试台已停机断电，冷却水和压缩空气已关闭。
行政部将于 9 月 30 日下午进行节前安全检查。

四、其他事项
1. 放假期间如需进入办公室，须提前向行政部申请临时门禁权限。
2. 出差人员请注意节假日期间交通和住宿安排，相关费用按《差旅报销制度》执行。
3. 请各位员工在 OA 系统中设置邮件自动回复，注明紧急联系人。

祝全体员工国庆节快乐！

人事行政部
2026 年 9 月 18 日
"""

SALARY_BANDS = [
    # band, typical roles, min, max, bonus target %
    ("L1", "Apprentice, assistant, production helper", 32000, 40000, 0),
    ("L2", "Technician, junior specialist, machine operator", 40000, 50000, 0),
    ("L3", "Specialist, engineer, accountant", 48000, 60000, 5),
    ("L4", "Senior specialist, senior engineer", 58000, 74000, 8),
    ("L5", "Lead engineer, principal specialist, key account manager", 72000, 88000, 10),
    ("L6", "Team manager, senior key account manager", 85000, 105000, 12),
    ("L7", "Department head", 100000, 130000, 15),
    ("L8", "Director, division head", 125000, 165000, 20),
]

SALARY_NOTES = [
    "Salary Bands 2026 - Northwind Precision Manufacturing GmbH (Germany)",
    "Classification: RESTRICTED - HR only. Do not forward.",
    "Amounts are gross annual base salaries in EUR for full-time employees, valid from 1 April 2026.",
    "Band L5: EUR 72,000 \u2013 88,000 (midpoint EUR 80,000). Typical roles: lead engineer, principal specialist.",
    "New hires are normally placed between the band minimum and the midpoint.",
    "Salaries above the band maximum require approval by the Head of HR and the CFO.",
    "Bonus target is a percentage of base salary, paid on company results and individual goals.",
    "Shanghai subsidiary employees have separate CNY salary bands maintained by HR & Admin Shanghai.",
    "Next review of the bands: March 2027, based on the annual salary benchmark.",
]


# ---------------------------------------------------------------------------
# PDF rendering (reportlab)
# ---------------------------------------------------------------------------

def build_pdf(doc_spec: dict, path: Path, cjk: bool = False) -> None:
    from reportlab import rl_config
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (PageBreak, Paragraph, SimpleDocTemplate, Spacer,
                                    Table, TableStyle)

    rl_config.invariant = 1  # deterministic IDs/timestamps

    if cjk:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.cidfonts import UnicodeCIDFont
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
        font = bold = "STSong-Light"
    else:
        font, bold = "Helvetica", "Helvetica-Bold"

    ss = getSampleStyleSheet()
    extra = {"wordWrap": "CJK"} if cjk else {}
    st = {
        "h1": ParagraphStyle("h1", parent=ss["Heading1"], fontName=bold, fontSize=18, leading=24, **extra),
        "h2": ParagraphStyle("h2", parent=ss["Heading2"], fontName=bold, fontSize=13, leading=18, **extra),
        "h3": ParagraphStyle("h3", parent=ss["Heading3"], fontName=bold, fontSize=11, leading=15, **extra),
        "p": ParagraphStyle("p", parent=ss["BodyText"], fontName=font, fontSize=10, leading=14.5, **extra),
        "li": ParagraphStyle("li", parent=ss["BodyText"], fontName=font, fontSize=10, leading=14.5,
                             leftIndent=14, firstLineIndent=-10, spaceBefore=1, spaceAfter=1, **extra),
        "cell": ParagraphStyle("cell", parent=ss["BodyText"], fontName=font, fontSize=9, leading=12, **extra),
    }

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    story = []
    for block in doc_spec["blocks"]:
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            story.append(Paragraph(esc(block[1]), st[kind]))
        elif kind in ("ul", "ol"):
            # Bullets/numbers are part of the paragraph text so that text
            # extraction keeps them on the same line as the item.
            for n, t in enumerate(block[1], 1):
                # Helvetica (WinAnsi) bullets extract as \x7f with pypdf, so use "-".
                bullet = "\u2022" if cjk else "-"
                mark = bullet if kind == "ul" else f"{n}."
                story.append(Paragraph(f"{mark} {esc(t)}", st["li"]))
            story.append(Spacer(1, 4))
        elif kind == "table":
            rows = [[Paragraph(esc(c), st["cell"]) for c in r] for r in block[1]]
            t = Table(rows, hAlign="LEFT", repeatRows=1)
            t.setStyle(TableStyle([
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde4ee")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]))
            story.append(t)
            story.append(Spacer(1, 8))
        elif kind == "pagebreak":
            story.append(PageBreak())
        else:  # pragma: no cover
            raise ValueError(kind)

    header = doc_spec["header"]

    def on_page(canvas, doc):
        canvas.saveState()
        canvas.setFont(font, 8)
        canvas.drawString(20 * mm, A4[1] - 12 * mm, header)
        page_label = f"第 {doc.page} 页" if cjk else f"Page {doc.page}"
        canvas.drawRightString(A4[0] - 20 * mm, 10 * mm, page_label)
        canvas.restoreState()

    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=A4, title=doc_spec["title"],
                            author="Northwind Precision Manufacturing",
                            leftMargin=20 * mm, rightMargin=20 * mm,
                            topMargin=20 * mm, bottomMargin=18 * mm)
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)


# ---------------------------------------------------------------------------
# DOCX rendering (python-docx)
# ---------------------------------------------------------------------------

def build_docx(doc_spec: dict, path: Path, cjk: bool = False) -> None:
    import docx
    from docx.oxml.ns import qn

    d = docx.Document()
    if cjk:
        for style_name in ("Normal", "Heading 1", "Heading 2", "Heading 3", "Title"):
            rpr = d.styles[style_name].element.get_or_add_rPr()
            rfonts = rpr.find(qn("w:rFonts"))
            if rfonts is None:
                rfonts = rpr.makeelement(qn("w:rFonts"), {})
                rpr.append(rfonts)
            rfonts.set(qn("w:eastAsia"), "SimSun")
    cp = d.core_properties
    cp.title = doc_spec["title"]
    cp.author = "Northwind Precision Manufacturing"
    cp.created = FIXED_TIME
    cp.modified = FIXED_TIME
    cp.last_modified_by = "make_binaries.py"
    cp.revision = 1

    for block in doc_spec["blocks"]:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            d.add_heading(block[1], level=int(kind[1]))
        elif kind == "p":
            d.add_paragraph(block[1])
        elif kind == "ul":
            for item in block[1]:
                d.add_paragraph(item, style="List Bullet")
        elif kind == "ol":
            for item in block[1]:
                d.add_paragraph(item, style="List Number")
        elif kind == "table":
            rows = block[1]
            t = d.add_table(rows=len(rows), cols=len(rows[0]))
            t.style = "Table Grid"
            for i, r in enumerate(rows):
                for j, c in enumerate(r):
                    t.cell(i, j).text = c
            for cell in t.rows[0].cells:
                for run in cell.paragraphs[0].runs:
                    run.bold = True
        elif kind == "pagebreak":
            d.add_page_break()
        else:  # pragma: no cover
            raise ValueError(kind)

    path.parent.mkdir(parents=True, exist_ok=True)
    d.save(str(path))


# ---------------------------------------------------------------------------
# XLSX (openpyxl)
# ---------------------------------------------------------------------------

def build_salary_xlsx(path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.properties.creator = "Northwind HR"
    wb.properties.title = "Salary Bands 2026"
    wb.properties.created = FIXED_TIME
    wb.properties.modified = FIXED_TIME

    ws = wb.active
    ws.title = "Salary Bands 2026"
    ws.append(["Band", "Typical roles", "Minimum (EUR)", "Midpoint (EUR)", "Maximum (EUR)", "Bonus target (%)"])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for band, roles, lo, hi, bonus in SALARY_BANDS:
        ws.append([band, roles, lo, (lo + hi) // 2, hi, bonus])
    for row in ws.iter_rows(min_row=2, min_col=3, max_col=5):
        for cell in row:
            cell.number_format = "#,##0"
    widths = {"A": 8, "B": 56, "C": 15, "D": 15, "E": 15, "F": 17}
    for col, w in widths.items():
        ws.column_dimensions[col].width = w
    ws.freeze_panes = "A2"

    notes = wb.create_sheet("Notes")
    notes.append(["Note"])
    notes["A1"].font = Font(bold=True)
    for line in SALARY_NOTES:
        notes.append([line])
    notes.column_dimensions["A"].width = 110

    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(str(path))


# ---------------------------------------------------------------------------

def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=here / "corpus", help="corpus root (default: %(default)s)")
    root = ap.parse_args().out

    outputs = [
        (build_pdf, Q3_RESULTS, root / "finance" / "q3_2026_results_summary.pdf", False),
        (build_pdf, NW5000_SPEC, root / "product" / "nw5000_spec_sheet.pdf", False),
        (build_pdf, LEAVE_CN, root / "china" / "员工休假制度.pdf", True),
        (build_docx, CODE_OF_CONDUCT, root / "policies" / "code_of_conduct.docx", False),
        (build_docx, ONBOARDING, root / "hr" / "onboarding_guide.docx", False),
        (build_docx, VENDOR_PAYMENT, root / "finance" / "vendor_payment_procedure.docx", False),
        (build_docx, INFOSEC_CN, root / "china" / "上海办公室信息安全规定.docx", True),
    ]
    for fn, spec, path, cjk in outputs:
        fn(spec, path, cjk=cjk)
        print(f"wrote {path.relative_to(root)}")

    xlsx = root / "hr" / "salary_bands.xlsx"
    build_salary_xlsx(xlsx)
    print(f"wrote {xlsx.relative_to(root)}")

    gbk = root / "china" / "通知.txt"
    gbk.parent.mkdir(parents=True, exist_ok=True)
    gbk.write_bytes(NOTICE_GBK.replace("\n", "\r\n").encode("gbk"))
    print(f"wrote {gbk.relative_to(root)} (GBK)")


if __name__ == "__main__":
    main()
